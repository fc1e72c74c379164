from datetime import datetime

from django import forms
from django.utils import timezone

from streams.models import Stream


class StreamForm(forms.ModelForm[Stream]):
    class Meta:
        model = Stream
        fields = ("title", "description", "keep_recordings", "latency_mode", "next_broadcast_at")
        widgets = {
            "description": forms.Textarea(attrs={"rows": 3}),
            "next_broadcast_at": forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        }
        labels = {"next_broadcast_at": "Next broadcast (UTC)"}
        help_texts = {"next_broadcast_at": "Shown on your offline watch page. Leave empty for none."}

    def clean_next_broadcast_at(self) -> datetime | None:
        when: datetime | None = self.cleaned_data.get("next_broadcast_at")
        if when is not None and when <= timezone.now() and when != self.instance.next_broadcast_at:
            raise forms.ValidationError("Announce a time in the future.")
        return when

    def clean_title(self) -> str:
        title = self.cleaned_data["title"].strip()
        if not title:
            raise forms.ValidationError("Give your stream a title.")
        return title
