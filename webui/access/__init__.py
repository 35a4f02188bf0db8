"""TCP access rules (tcp.smtp), ordered, with the which-rule-matches tester."""
