"""The X API and its signed storage URLs: create/get/list jobs, upload, download."""
