"""`sim`: a federated-learning simulation harness on Flower's Ray simulation engine.

Importing the package switches off everything that would contact outside hosts, before
`flwr` or `ray` can be imported: Flower telemetry and Ray usage statistics. A user who
wants them sets the variables before starting Python (we only fill in defaults). The
same goes for the trackers' MLflow telemetry and W&B error reporting. It also
registers the two small OmegaConf resolvers that conf/config.yaml uses for `resume=`.
"""

import os

OFFLINE_ENVIRONMENT = {
    "FLWR_TELEMETRY_ENABLED": "0",  # Flower: no telemetry events to flower.ai
    "RAY_USAGE_STATS_ENABLED": "0",  # Ray: no usage statistics to anyscale
    "RAY_DISABLE_DOCKER_CPU_WARNING": "1",  # Ray: quiet warning on containers
    "RAY_DEDUP_LOGS": "0",  # Ray: worker logs (when shown) as they are
    "MLFLOW_DISABLE_TELEMETRY": "true",  # MLflow (logger=mlflow): no usage telemetry
    "WANDB_ERROR_REPORTING": "false",  # W&B (logger=wandb): no error reports or telemetry
}
for _key, _value in OFFLINE_ENVIRONMENT.items():
    os.environ.setdefault(_key, _value)

# Resolvers used by conf/config.yaml (registered on import, before Hydra composes).
from omegaconf import OmegaConf  # noqa: E402

OmegaConf.register_new_resolver("sim_or", lambda value, default: value or default, replace=True)
OmegaConf.register_new_resolver("sim_unless", lambda value, default: None if value else default, replace=True)

__version__ = "0.1.0"
