"""`import fitlens` needs neither Keras nor Lightning; the integrations name the extra to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCK = textwrap.dedent(
    """
    import sys
    for name in ("keras", "lightning", "lightning.pytorch", "pytorch_lightning"):
        sys.modules[name] = None  # any import of these now raises ImportError
    """
)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_fitlens_and_its_core_import_with_keras_and_lightning_blocked():
    result = _run(
        """
        import fitlens
        from fitlens import History, Progress, EpochMean, fit, Callback
        import fitlens.view.lens, fitlens.training.loop
        assert "fitlens" in repr(fitlens.History)
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_importing_fitlens_loads_neither_framework():
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, fitlens, fitlens.training.loop, fitlens.view.lens; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('keras', 'lightning', 'pytorch_lightning', 'tensorflow', 'jax')))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_missing_keras_names_the_extra_to_install():
    result = _run(
        """
        try:
            import fitlens.keras
        except ImportError as e:
            print(e)
        """
    )
    assert "pip install 'fitlens[keras]'" in result.stdout, result.stderr


def test_a_missing_lightning_names_the_extra_to_install():
    result = _run(
        """
        import fitlens
        try:
            fitlens.lightning
        except ImportError as e:
            print(e)
        """
    )
    assert "pip install 'fitlens[lightning]'" in result.stdout, result.stderr
