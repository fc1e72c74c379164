"""``manage.py init_storage``: wait for the S3 origin, create the bucket and let the edge read
it anonymously. Idempotent; run at deploy time (docker-compose's ``migrate`` service)."""

from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from transcoding import storage


class Command(BaseCommand):
    help = "Create the S3 bucket (if missing) and allow anonymous reads of its objects."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for the origin")

    def handle(self, *args: Any, **options: Any) -> None:
        storage.wait_and_ensure_bucket(options["timeout"])
        storage.ensure_public_read()
        self.stdout.write(f"bucket {settings.S3_BUCKET} ready at {settings.S3_ENDPOINT_URL}")
