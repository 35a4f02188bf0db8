"""systemd unit templates (package data): one ``postern-<daemon>.service`` per daemon and
``postern.target``. ``appliance.install.render_unit`` fills their ``@PLACEHOLDERS@``."""
