"""Tests of daskfleet on AWS, against a moto server and a local IMDSv2 endpoint (no AWS needed)."""
