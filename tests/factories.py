"""Typed factory_boy factories for the models tests need most."""

import factory
from factory.django import DjangoModelFactory

from accounts.models import User
from streams import services
from streams.models import Stream

DEFAULT_PASSWORD = "correct-horse-battery-9"


class UserFactory(DjangoModelFactory[User]):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")
    display_name = factory.LazyAttribute(lambda o: o.username.title())
    password = factory.PostGenerationMethodCall("set_password", DEFAULT_PASSWORD)

    @factory.post_generation
    def _save(obj: User, create: bool, extracted: object, **kwargs: object) -> None:  # noqa: N805
        if create:
            obj.save()


def make_stream(owner: User | None = None, **kwargs: object) -> tuple[Stream, str]:
    """A stream through the real service (so the key is hashed as in production) and its key.
    ``latency_mode`` defaults to normal (CHUNK_SECONDS), the chunk duration the pipeline tests
    were written for; new streams in production default to low."""
    kwargs.setdefault("latency_mode", "normal")
    created = services.create_stream(owner or UserFactory(), title=str(kwargs.pop("title", "Test stream")), **kwargs)  # type: ignore[arg-type]
    return created.stream, created.key
