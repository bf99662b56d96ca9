"""Forecast next month's SPI from the three previous months, and log the model to MLflow.

A ridge regression on lagged SPI (t-3, t-2, t-1 → t), trained on every 7th grid cell over all
years but the last five and tested on the last five years: the skill of a persistence-style
statistical forecast, the baseline any drought early-warning model must beat. The fitted model,
its parameters and its metrics (RMSE and R² on the test years, and the persistence RMSE) go to
MLflow; the same metrics are written as JSON, the step's declared output.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import xarray as xr

LAGS = 3
TEST_YEARS = 5
CELL_STRIDE = 7


def lagged(spi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(features, target) from a (time, cell) SPI array: LAGS previous months → this month."""
    x = np.stack([spi[k : spi.shape[0] - LAGS + k] for k in range(LAGS)], axis=-1)
    y = spi[LAGS:]
    return x, y


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spi", type=Path, required=True)
    ap.add_argument("--alpha", type=float, default=1.0, help="ridge regularisation strength")
    ap.add_argument("--out", type=Path, required=True, help="skill metrics (JSON)")
    ns = ap.parse_args(argv)
    if not ns.spi.is_file():
        print(f"forecast_spi.py: error: SPI file not found: {ns.spi}", file=sys.stderr)
        return 1
    with xr.open_dataset(ns.spi, engine="netcdf4") as ds:
        if "spi" not in ds:
            print("forecast_spi.py: error: no variable 'spi' in the input", file=sys.stderr)
            return 1
        spi = ds["spi"].values.astype("float64")
    cells = spi.reshape(spi.shape[0], -1)[:, ::CELL_STRIDE]
    cells = cells[:, np.all(np.isfinite(cells), axis=0)]
    if cells.shape[1] == 0:
        print("forecast_spi.py: error: no cell has a complete SPI series", file=sys.stderr)
        return 1
    x, y = lagged(cells)
    split = x.shape[0] - 12 * TEST_YEARS
    x_train, y_train = x[:split].reshape(-1, LAGS), y[:split].ravel()
    x_test, y_test = x[split:].reshape(-1, LAGS), y[split:].ravel()

    import mlflow
    from sklearn.linear_model import Ridge
    from sklearn.metrics import mean_squared_error, r2_score

    model = Ridge(alpha=ns.alpha).fit(x_train, y_train)
    pred = model.predict(x_test)
    metrics = {
        "rmse": float(np.sqrt(mean_squared_error(y_test, pred))),
        "r2": float(r2_score(y_test, pred)),
        "persistence_rmse": float(np.sqrt(mean_squared_error(y_test, x_test[:, -1]))),
        "train_samples": int(y_train.size),
        "test_samples": int(y_test.size),
    }
    with mlflow.start_run(run_name="spi_forecast_ridge"):
        mlflow.log_params(
            {
                "model": "ridge",
                "alpha": ns.alpha,
                "lags": LAGS,
                "test_years": TEST_YEARS,
                "cell_stride": CELL_STRIDE,
            }
        )
        mlflow.log_metrics(metrics)
        mlflow.sklearn.log_model(model, name="spi_forecast", input_example=x_test[:5])
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(
        json.dumps({k: round(v, 6) for k, v in metrics.items()}, indent=2, sort_keys=True) + "\n"
    )
    print(
        f"ridge forecast of SPI: rmse {metrics['rmse']:.3f} (persistence "
        f"{metrics['persistence_rmse']:.3f}), r2 {metrics['r2']:.3f} "
        f"on {metrics['test_samples']} test samples"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
