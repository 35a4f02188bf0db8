"""The ``postern`` command: init, run (supervisor), install, and the sendmail front end."""
