"""Make the worked example of `transferlens select`: a target task file and five candidate models.

    python examples/make_example.py        # writes examples/target_rotate.npz and examples/weights/*.safetensors

The target is scikit-learn's digits rotated by up to 30 degrees (`digits:rotate`, strength 0.5), saved as
a plain .npz (x_train, y_train, x_test, y_test). The candidates are the same small MLP
(`examples.digits_models:small_mlp`) trained on other versions of digits (plain, blurred, flipped,
inverted) and one left at its random initialisation; `reference.safetensors` is the MLP trained on the
target itself (for the alpha metrics, `--reference`). Seeds are fixed, so the files are the same on every
run on the same torch version.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

import transferlens as tl
from transferlens.data.load import save_task

HERE = Path(__file__).resolve().parent
SOURCES = {"plain": "none", "blur": "blur", "flip": "flip", "invert": "invert"}


def main() -> None:
    import sys

    sys.path.insert(0, str(HERE.parent))
    from examples.digits_models import small_mlp

    torch.set_num_threads(1)  # small models: one thread is fastest, and the files do not depend on the machine
    (HERE / "weights").mkdir(exist_ok=True)
    target = tl.digits_task("rotate", strength=0.5, seed=1)
    save_task(target, HERE / "target_rotate.npz")
    for name, transform in SOURCES.items():
        task = tl.digits_task(transform, seed=2)
        torch.manual_seed(0)
        model = tl.wrap_model(small_mlp(), "classifier")
        result = tl.fit(model, task, epochs=40, seed=0, device="cpu")
        save_file(model.module.state_dict(), str(HERE / "weights" / f"{name}.safetensors"))
        print(f"{name:>7}: source test accuracy {result.test_accuracy:.3f} ({result.epochs_run} epochs)")
    torch.manual_seed(0)
    save_file(small_mlp().state_dict(), str(HERE / "weights" / "untrained.safetensors"))
    # a model trained on the target itself: the reference the alpha metrics compare each candidate with
    torch.manual_seed(1)
    reference = tl.wrap_model(small_mlp(), "classifier")
    result = tl.fit(reference, target, epochs=40, seed=1, device="cpu")
    save_file(reference.module.state_dict(), str(HERE / "weights" / "reference.safetensors"))
    print(f"reference: target test accuracy {result.test_accuracy:.3f} ({result.epochs_run} epochs)")
    print(f"wrote {HERE / 'target_rotate.npz'} and {HERE / 'weights'}/*.safetensors")


if __name__ == "__main__":
    main()
