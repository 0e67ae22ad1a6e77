"""How exact the Keras callback's recovered per-batch values are with float32 metrics.

Trains the tests' recording model for one 300-batch epoch (torch backend) and prints, per range
of batches, the largest |recovered - computed| loss and that error divided by k * |running mean|.
Run:  KERAS_BACKEND=torch PYTHONPATH=src python benchmarks/keras_unroll_precision.py
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import numpy as np
from integrations.test_keras_callback import FitlensCallback, _data, _model

x, y, _ = _data(3000)
model = _model(metrics=["accuracy"])
lens = FitlensCallback(verbose=0)
model.fit(x, y, batch_size=10, epochs=1, verbose=0, callbacks=[lens])
err = np.abs(lens.history.batches["loss"] - np.array(model.batch_loss))
k = np.arange(1, len(err) + 1)
m = np.cumsum(model.batch_loss) / k
print("batches   max abs error   max error / (k |mean|)")
for a, b in [(0, 10), (10, 50), (50, 100), (100, 300)]:
    ratio = (err[a:b] / (k[a:b] * np.abs(m[a:b]))).max()
    print(f"{a + 1:>3}-{b:<4} {err[a:b].max():14.2e} {ratio:22.2e}")
