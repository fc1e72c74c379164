"""Production: secrets have no defaults, HTTPS cookies, real MongoDB required."""

from livestream.settings.base import *  # noqa: F403
from livestream.settings.base import env

SECRET_KEY = env.str("DJANGO_SECRET_KEY")
S3_ACCESS_KEY = env.str("S3_ACCESS_KEY")
S3_SECRET_KEY = env.str("S3_SECRET_KEY")
RTMP_CALLBACK_SECRET = env.str("RTMP_CALLBACK_SECRET")
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=True)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
