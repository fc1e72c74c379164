from django.apps import AppConfig


class LivestreamConfig(AppConfig):
    name = "livestream"
    verbose_name = "Platform"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from livestream import dbpool

        # Connections of threads that end without closing them go back to the pool (dbpool).
        connection_created.connect(dbpool.remember_loan, dispatch_uid="livestream.dbpool.remember_loan")
