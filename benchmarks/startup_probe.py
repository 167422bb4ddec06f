"""Run in a fresh process by ``end_to_end.startup_times``: times from process start to the first step.

Usage: python -m benchmarks.startup_probe LAUNCH_TIME DEVICE
LAUNCH_TIME is the parent's time.time() just before it started this process. Prints one JSON line
of wall-clock times (s), all measured from LAUNCH_TIME. The training data is a synthetic mini-batch
made in memory, so data loading is not included.
"""

import time

T_MAIN = time.time()

import json  # noqa: E402
import sys  # noqa: E402


def main() -> None:
    launched, device = float(sys.argv[1]), sys.argv[2]
    out = {"device": device, "interpreter_start": T_MAIN - launched}
    import numpy as np

    out["import_numpy"] = time.time() - launched
    import gpubp

    out["import_gpubp"] = time.time() - launched
    net = gpubp.Network([784, 30, 10], activation="sigmoid", loss="quadratic", device=device, seed=0)
    out["network_built"] = time.time() - launched
    rng = np.random.default_rng(0)
    X = rng.random((10, 784), dtype=np.float32)
    y = rng.integers(0, 10, 10)
    net.fit(X, y, epochs=1, batch_size=10, lr=3.0)  # one mini-batch: the first training step
    out["first_step_done"] = time.time() - launched
    t0 = time.time()
    net.fit(X, y, epochs=1, batch_size=10, lr=3.0)
    out["second_step_s"] = time.time() - t0
    out["first_fit_s"] = out["first_step_done"] - out["network_built"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
