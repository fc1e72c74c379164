"""Stream list endpoint: ours vs the straightforward DRF list, same data, same run.

Ours (``streams.api.views.StreamViewSet``) joins owners in the page query and reads the viewer
counts of a page's live streams in one Redis pipeline. The baseline is the ModelViewSet one
writes first: no ``select_related`` (one owner query per row) and one Redis call per row for
its viewer count. Both are called in-process through DRF's request factory against the bench
database and Redis, with 50 streams per page, half of them live. The response bodies are
checked to be identical before timing. Prints pages per second for both and the ratio.
"""

import time
from typing import Any

PAGE = 50


def _baseline_view() -> Any:
    from rest_framework import serializers, viewsets

    from chat.presence import viewer_count
    from livestream.api import StrictLimitOffsetPagination
    from streams.api.serializers import StreamSerializer
    from streams.models import Stream

    class NaiveStreamSerializer(StreamSerializer):
        viewer_count = serializers.SerializerMethodField()

        def get_viewer_count(self, obj: Stream) -> int:
            return viewer_count(obj.pk) if obj.is_live else 0

    class NaiveStreamViewSet(viewsets.ReadOnlyModelViewSet[Stream]):
        queryset = Stream.objects.order_by("-created_at")
        serializer_class = NaiveStreamSerializer
        pagination_class = StrictLimitOffsetPagination
        authentication_classes = ()
        permission_classes = ()
        throttle_classes = ()
        filter_backends = ()

    return NaiveStreamViewSet.as_view({"get": "list"})


def _ours() -> Any:
    from streams.api.views import StreamViewSet

    class Ours(StreamViewSet):
        authentication_classes = ()
        throttle_classes = ()

    return Ours.as_view({"get": "list"})


def _pages_per_s(view: Any, factory: Any, n: int) -> tuple[float, Any]:
    data = None
    start = time.perf_counter()
    for _ in range(n):
        response = view(factory.get(f"/api/v1/streams/?limit={PAGE}"))
        response.render()
        data = response.data
    return n / (time.perf_counter() - start), data


def run(args: Any) -> list[str]:
    from django.core.management import call_command
    from rest_framework.test import APIRequestFactory

    from accounts.models import User
    from chat.presence import _key as presence_key
    from livestream.redis import redis_client
    from streams import services
    from streams.models import Stream, StreamStatus

    call_command("migrate", verbosity=0)
    stamp = f"{time.time():.0f}"
    created: list[Stream] = []
    for i in range(PAGE):
        owner = User.objects.create(username=f"bench-api-{stamp}-{i}", email=f"bench-api-{stamp}-{i}@example.com")
        created.append(services.create_stream(owner, title=f"api bench {i}").stream)
    live = created[::2]
    Stream.objects.filter(pk__in=[s.pk for s in live]).update(status=StreamStatus.LIVE)
    redis = redis_client()
    for s in live:
        redis.zadd(presence_key(s.pk), {f"v{j}": time.time() + 600 for j in range(s.pk % 7 + 1)})
    factory = APIRequestFactory()
    n = 30 if args.quick else 200
    try:
        ours_view, base_view = _ours(), _baseline_view()
        _, ours_data = _pages_per_s(ours_view, factory, 1)  # warm-up, and the bodies to compare
        _, base_data = _pages_per_s(base_view, factory, 1)
        if ours_data != base_data:
            raise RuntimeError("ours and the baseline return different pages")
        base_rate, _ = _pages_per_s(base_view, factory, n)
        ours_rate, _ = _pages_per_s(ours_view, factory, n)
    finally:
        for s in live:
            redis.delete(presence_key(s.pk))
        owners = [s.owner_id for s in created]
        Stream.objects.filter(pk__in=[s.pk for s in created]).delete()
        User.objects.filter(pk__in=owners).delete()
    return [
        f"stream list, {PAGE} per page ({len(live)} live): ours {ours_rate:.0f} pages/s"
        f" vs naive DRF list (baseline) {base_rate:.0f} pages/s: {ours_rate / base_rate:.1f}x",
    ]
