from datetime import datetime
from typing import Any

from django import forms
from django.utils import timezone

from streams.models import LatencyMode, Stream


class StreamForm(forms.ModelForm[Stream]):
    class Meta:
        model = Stream
        fields = ("title", "description", "keep_recordings", "latency_mode", "start_in_preview", "next_broadcast_at")
        widgets = {
            "description": forms.Textarea(attrs={"rows": 3}),
            "next_broadcast_at": forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        }
        labels = {
            "next_broadcast_at": "Next broadcast (UTC)",
            "latency_mode": "Latency",
            "start_in_preview": "Start in private preview",
        }
        help_texts = {"next_broadcast_at": "Shown on your offline watch page. Leave empty for none."}

    def clean_next_broadcast_at(self) -> datetime | None:
        when: datetime | None = self.cleaned_data.get("next_broadcast_at")
        if when is not None and when <= timezone.now() and when != self.instance.next_broadcast_at:
            raise forms.ValidationError("Announce a time in the future.")
        return when

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A form posted without it (an older page) keeps the stream's mode.
        self.fields["latency_mode"].required = False

    def clean_latency_mode(self) -> str:
        mode: str = self.cleaned_data.get("latency_mode") or self.instance.latency_mode or LatencyMode.LOW
        return mode

    def clean_title(self) -> str:
        title = self.cleaned_data["title"].strip()
        if not title:
            raise forms.ValidationError("Give your stream a title.")
        return title
