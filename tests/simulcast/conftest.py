from tests.api.conftest import staff_client, staff_user

__all__ = ["staff_client", "staff_user"]
