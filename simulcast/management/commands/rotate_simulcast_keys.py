"""Re-encrypt every restream target's stored key with the current SIMULCAST_KEY_SECRET.

Rotation (docs/deployment.md): set the new secret in SIMULCAST_KEY_SECRET and the old one in
SIMULCAST_KEY_SECRET_PREVIOUS on every app role, run this once, then drop the old secret.
Keys that decrypt with none of the secrets are listed (their streamers must enter them again)
and left as they are; the command exits 1 if there were any.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from simulcast import services


class Command(BaseCommand):
    help = "Re-encrypt the restream targets' keys with the current SIMULCAST_KEY_SECRET."

    def handle(self, *args: Any, **options: Any) -> None:
        result = services.reencrypt_keys()
        self.stdout.write(f"re-encrypted {result.reencrypted} key(s) with the current secret")
        for target_id, stream_id in result.unreadable:
            self.stderr.write(f"target {target_id} of stream {stream_id}: key unreadable, to be entered again")
        if result.unreadable:
            raise CommandError(f"{len(result.unreadable)} key(s) decrypt with no configured secret")
