from django import forms


class TargetForm(forms.Form):
    """The dashboard's "add a restream target" form (checks in ``services.create_target``)."""

    name = forms.CharField(max_length=80, help_text="Shown in your dashboard, e.g. YouTube.")
    url = forms.CharField(
        max_length=500,
        label="Server URL",
        help_text="rtmp:// or rtmps:// URL from the service, without the key.",
        widget=forms.TextInput(attrs={"placeholder": "rtmps://a.rtmp.youtube.com/live2"}),
    )
    key = forms.CharField(
        max_length=500,
        label="Stream key",
        help_text="Stored encrypted; never shown again.",
        widget=forms.PasswordInput(attrs={"autocomplete": "off"}),
    )

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("Give the target a name.")
        return name
