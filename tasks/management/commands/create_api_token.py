"""Print a local-mode API token for a user: ``Authorization: Bearer <token>``."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from tasks.auth.bearer import issue_local_token


class Command(BaseCommand):
    help = "Create an API token for USERNAME and print it (shown only once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="a label for the token")

    def handle(self, *args, username: str, name: str, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}")
        if not user.is_active:
            raise CommandError(f"user {username!r} is inactive")
        self.stdout.write(issue_local_token(user, name=name))
