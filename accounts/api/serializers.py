from django.contrib.auth.password_validation import validate_password
from django.core.validators import RegexValidator
from rest_framework import serializers

from accounts.models import User
from livestream.api import BlankableURLField, StrictCharField, StrictModelSerializer


class UserPublicSerializer(serializers.ModelSerializer[User]):
    avatar_url = BlankableURLField(read_only=True)

    class Meta:
        model = User
        fields = ("id", "username", "display_name", "avatar_url")
        read_only_fields = fields


class MeSerializer(StrictModelSerializer[User]):
    avatar_url = BlankableURLField(required=False)

    class Meta:
        model = User
        fields = ("id", "username", "email", "display_name", "avatar_url", "bio", "created_at")
        read_only_fields = ("id", "username", "created_at")

    def validate_email(self, value: str) -> str:
        value = value.strip().lower()
        others = User.objects.filter(email__iexact=value)
        if self.instance is not None:
            others = others.exclude(pk=self.instance.pk)
        if others.exists():
            raise serializers.ValidationError("An account with this email already exists.")
        return value


class RegisterSerializer(serializers.Serializer[User]):
    username = StrictCharField(
        max_length=150,
        validators=[RegexValidator(r"^[\w.@+-]+\Z", "Letters, digits and @/./+/-/_ only.")],
    )
    email = serializers.EmailField(max_length=254)
    password = StrictCharField(write_only=True, max_length=128, style={"input_type": "password"})
    display_name = StrictCharField(max_length=64, required=False, allow_blank=True, default="")

    def validate_username(self, value: str) -> str:
        if User.objects.filter(username__iexact=value).exists():
            raise serializers.ValidationError("This username is taken.")
        return value

    def validate_email(self, value: str) -> str:
        value = value.strip().lower()
        if User.objects.filter(email__iexact=value).exists():
            raise serializers.ValidationError("An account with this email already exists.")
        return value

    def validate(self, attrs: dict[str, str]) -> dict[str, str]:
        candidate = User(username=attrs["username"], email=attrs["email"])
        try:
            validate_password(attrs["password"], candidate)
        except Exception as exc:  # django ValidationError -> field error
            raise serializers.ValidationError({"password": list(getattr(exc, "messages", [str(exc)]))}) from None
        return attrs


class TokenRequestSerializer(serializers.Serializer[None]):
    username = StrictCharField(max_length=150)
    password = StrictCharField(max_length=128, style={"input_type": "password"}, trim_whitespace=False)


class TokenSerializer(serializers.Serializer[None]):
    token = serializers.CharField(read_only=True)
