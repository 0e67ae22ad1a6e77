"""`fitlens.fit`: the training loop and its callbacks."""
