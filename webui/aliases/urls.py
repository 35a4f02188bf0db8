"""/aliases/."""

from webui.aliases.views import ALIASES
from webui.core.views import crud_urls

urlpatterns = crud_urls(ALIASES)
