from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import path

from apps.integrations.metrics import metrics_view
from apps.integrations.webhooks.views import github_webhook

urlpatterns = [
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
    path("webhooks/github/", github_webhook, name="github-webhook"),
]
# The admin's CSS and JS, served by Django only with DEBUG (an empty list otherwise): in
# production the proxy serves STATIC_ROOT after `collectstatic` (README, "Serving").
urlpatterns += staticfiles_urlpatterns()
