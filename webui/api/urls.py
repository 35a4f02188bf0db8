"""/api/v1/ (filled in below)."""

urlpatterns: list[object] = []
