"""One router per resource: tasks, labels, me, admin, and the HTML pages."""
