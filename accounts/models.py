"""User accounts. The profile (display name, avatar, bio) lives on the user row itself."""

import pghistory
from django.contrib.auth.models import AbstractUser
from django.db import models

from livestream.models import TimestampedModel


@pghistory.track(
    pghistory.InsertEvent(),
    pghistory.UpdateEvent(),
    pghistory.DeleteEvent(),
    exclude=["password", "last_login"],
)
class User(AbstractUser, TimestampedModel):
    email = models.EmailField("email address", unique=True)
    display_name = models.CharField(max_length=64, blank=True)
    avatar_url = models.URLField(max_length=500, blank=True)
    bio = models.TextField(max_length=2000, blank=True)

    class Meta(AbstractUser.Meta):  # type: ignore[name-defined]
        swappable = "AUTH_USER_MODEL"

    @property
    def public_name(self) -> str:
        return self.display_name or self.username
