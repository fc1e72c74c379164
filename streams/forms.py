from django import forms

from streams.models import Stream


class StreamForm(forms.ModelForm[Stream]):
    class Meta:
        model = Stream
        fields = ("title", "description", "keep_recordings")
        widgets = {"description": forms.Textarea(attrs={"rows": 3})}

    def clean_title(self) -> str:
        title = self.cleaned_data["title"].strip()
        if not title:
            raise forms.ValidationError("Give your stream a title.")
        return title
