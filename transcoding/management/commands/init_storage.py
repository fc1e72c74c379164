"""``manage.py init_storage``: wait for the S3 origin, create the bucket and let viewers read
its public prefix (``live/``, see ``storage.viewer_read_policy``) anonymously. Idempotent.

Run it with credentials that may create buckets and set bucket policies (a local SeaweedFS,
an AWS deployment's admin role). With ``--check`` it only waits until the bucket answers to
the configured credentials and changes nothing: what the compose stack's ``migrate`` service
does, where the app's least-privileged S3 user may not manage buckets and the storage-init
job (deploy/minio/init.sh) has set everything up.
"""

from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from transcoding import storage


class Command(BaseCommand):
    help = "Create the S3 bucket (if missing) and allow anonymous reads of its live/ prefix."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for the origin")
        parser.add_argument(
            "--check", action="store_true", help="only wait until the bucket is reachable; change nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["check"]:
            self._wait_for_bucket(options["timeout"])
            self.stdout.write(f"bucket {settings.S3_BUCKET} reachable at {settings.S3_ENDPOINT_URL}")
            return
        storage.wait_and_ensure_bucket(options["timeout"])
        if not storage.ensure_public_read():
            raise CommandError(
                "could not set the bucket policy that lets viewers read live/ (see the log); "
                "set it as the storage administrator, or run with --check"
            )
        self.stdout.write(f"bucket {settings.S3_BUCKET} ready at {settings.S3_ENDPOINT_URL}; live/ readable")

    def _wait_for_bucket(self, timeout: float) -> None:
        from livestream import devstack

        last: list[str] = []

        def reachable() -> bool:
            try:
                storage.check_bucket()
            except Exception as exc:
                last[:] = [f"{exc.__class__.__name__}: {exc}"]
                return False
            return True

        try:
            devstack.wait_until(reachable, timeout, f"bucket {settings.S3_BUCKET}", step=0.5)
        except TimeoutError as exc:
            raise CommandError(f"{exc}; last error: {last[0] if last else '-'}") from None
