"""What users write against: routes, controllers, JSON events, the application, the public
folder's route, the browser client. No sockets here: the server layer below runs it."""
