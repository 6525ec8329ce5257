"""Running a mesh locally: the echo app, process supervision, `meshc up`."""
