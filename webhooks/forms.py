from typing import Any

from django import forms

from webhooks.addresses import UnsafeURLError, check_url_target
from webhooks.models import Event


class EndpointForm(forms.Form):
    url = forms.CharField(
        label="Payload URL",
        max_length=500,
        widget=forms.URLInput(attrs={"placeholder": "https://example.com/hooks/livestream"}),
        help_text="We POST signed JSON here. Only http(s); private addresses are refused in production.",
    )
    description = forms.CharField(max_length=200, required=False)
    events = forms.MultipleChoiceField(
        choices=Event.choices, widget=forms.CheckboxSelectMultiple, initial=[Event.STREAM_LIVE, Event.STREAM_OFFLINE]
    )
    is_active = forms.BooleanField(label="Active", required=False, initial=True)

    def clean_url(self) -> str:
        url: str = self.cleaned_data["url"].strip()
        try:
            check_url_target(url)
        except UnsafeURLError as exc:
            raise forms.ValidationError(str(exc)) from None
        return url

    def values(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "url": data["url"],
            "events": list(data["events"]),
            "description": data.get("description", ""),
            "is_active": bool(data.get("is_active")),
        }
