"""URLs (filled in below as the app grows)."""

urlpatterns: list[object] = []
