"""/mailboxes/."""

from webui.core.views import crud_urls
from webui.mailboxes.views import MAILBOXES

urlpatterns = crud_urls(MAILBOXES)
