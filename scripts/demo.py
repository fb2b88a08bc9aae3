"""`make demo`: the design card end to end on the built-in data.

1. trains `dog` through `mlflow run . -P config=dog.yaml --env-manager local`;
2. trains `cat` with `kennel train`;
3. promotes the better of the two to `dev` through the gate (`kennel promote`);
4. compares the two runs in the terminal (`kennel compare`);
5. prints how to compare the runs in the MLflow UI and how to serve and query `@dev`.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODEL = "breast-cancer"
EXPERIMENT = "breast-cancer"  # where kennel files runs on this data, whatever launched them


def sh(
    *cmd: str, env: dict[str, str], ok: tuple[int, ...] = (0,)
) -> subprocess.CompletedProcess[str]:
    print(f"\n$ {shlex.join(cmd)}", flush=True)
    result = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    if result.returncode not in ok:
        sys.exit(f"demo: step failed with exit code {result.returncode}")
    return result


def main() -> None:
    env = dict(os.environ)
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT / 'mlflow.db'}")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    uri = env["MLFLOW_TRACKING_URI"]
    print(f"tracking store: {uri}")
    # Both trainings register a version; the demo promotes explicitly, so no auto-promotion.
    sh(
        "mlflow",
        "run",
        ".",
        "-P",
        "config=dog.yaml",
        "-P",
        "overrides=registry.auto_promote=null",
        "--env-manager",
        "local",
        env=env,
    )
    cat = json.loads(
        sh(
            sys.executable,
            "run.py",
            "train",
            "-c",
            "cat.yaml",
            "registry.auto_promote=null",
            env=env,
        )
        .stdout.strip()
        .splitlines()[-1]
    )

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    versions = sorted(client.search_model_versions(f"name='{MODEL}'"), key=lambda v: int(v.version))
    dog_version = next(v for v in reversed(versions) if v.tags.get("kennel.family") == "dog")
    scores = {
        "dog": (int(dog_version.version), client.get_run(dog_version.run_id).data.metrics),
        "cat": (cat["registered_version"], cat["metrics"]),
    }
    for family, (version, metrics) in scores.items():
        print(f"{family}: version {version}, test_roc_auc={metrics['test_roc_auc']:.4f}")
    best = max(scores, key=lambda f: scores[f][1]["test_roc_auc"])
    decision = json.loads(
        sh(
            sys.executable,
            "run.py",
            "promote",
            "-c",
            f"{best}.yaml",
            "--version",
            str(scores[best][0]),
            "--to",
            "dev",
            env=env,
            ok=(0, 3),  # 3: the gate kept a better version already in dev
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    print(f"\n{best} is better; promotion to dev: {decision.get('reason')}")
    compared = sh(sys.executable, "run.py", "compare", env=env)
    print(compared.stdout, end="")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    request = ROOT / "outputs" / "demo_request.json"
    request.parent.mkdir(exist_ok=True)
    from sklearn.datasets import load_breast_cancer

    rows = load_breast_cancer(as_frame=True).data.head(2)
    split = rows.to_dict(orient="split")
    payload = {"dataframe_split": {"columns": split["columns"], "data": split["data"]}}
    request.write_text(json.dumps(payload))
    print(
        "\nNext (in a shell where `source .venv/bin/activate` was run):\n"
        f"  compare the runs:   mlflow ui --backend-store-uri {uri} --port 5000\n"
        f"                      then open http://127.0.0.1:5000/#/experiments/"
        f"{experiment.experiment_id}/runs?workflowType=machine_learning\n"
        f"  serve dev:          MLFLOW_TRACKING_URI={uri} mlflow models serve "
        f"-m models:/{MODEL}@dev --env-manager local -p 5001\n"
        "                      (or: kennel serve --env dev)\n"
        "  query it:           curl -s http://127.0.0.1:5001/invocations "
        f"-H 'Content-Type: application/json' -d @{request.relative_to(ROOT)}"
    )


if __name__ == "__main__":
    main()
