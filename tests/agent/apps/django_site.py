"""A one-file Django service for the agent's tests (`gunicorn django_site`)."""

from django.conf import settings

settings.configure(DEBUG=False, ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], SECRET_KEY="test-only", MIDDLEWARE=[])

from django.core.wsgi import get_wsgi_application  # noqa: E402 (settings first)
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402


def account(request: HttpRequest, account_id: int) -> JsonResponse:
    return JsonResponse({"id": account_id})


urlpatterns = [path("accounts/<int:account_id>", account)]

application = get_wsgi_application()
