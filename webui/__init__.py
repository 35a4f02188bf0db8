"""Postern's web admin: the Django project and its apps."""
