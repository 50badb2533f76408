"""HTTP building blocks: requests, responses, cookies, parameters, static files, templates."""
