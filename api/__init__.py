"""HTTP side: the app factory, dependencies, JSON routes and the server-rendered dashboard."""
