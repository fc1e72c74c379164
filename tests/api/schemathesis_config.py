"""Schemathesis configuration shared by the in-process run (tests/api/test_schemathesis.py) and
the run against the live server (tests/web/test_load.py)."""

from schemathesis.config import SchemathesisConfig

# Statuses that count as "rejected" for schema-violating requests: schemathesis' defaults plus
# 413, the API's answer to a body over its size limit (e.g. QoE report batches over 16 kB),
# which is a rejection like any 4xx.
NEGATIVE_DATA_REJECTED = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]

CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": NEGATIVE_DATA_REJECTED}}}
)
