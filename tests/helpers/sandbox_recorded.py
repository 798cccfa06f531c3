"""Recorded real responses from docs/x-compliance-api.md (signatures shortened to <SIG>)."""

from __future__ import annotations

import json
from typing import Any

# R-tweepy 2021-10-07, POST /2/compliance/jobs (tweets).
CREATE_TWEETS = json.loads(
    '{"data":{"upload_expires_at":"2021-10-07T07:56:18.000Z","created_at":"2021-10-07T07:41:18.000Z","status":"created","download_url":"https://storage.googleapis.com/twttr-tweet-compliance/1446017776678801409/delivery/1168916625673924610_1446017776678801409?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=complianceapi-public-svc-acct%40twttr-compliance-public-prod.iam.gserviceaccount.com%2F20211007%2Fauto%2Fstorage%2Fgoog4_request&X-Goog-Date=20211007T074118Z&X-Goog-Expires=604800&X-Goog-SignedHeaders=host&X-Goog-Signature=<SIG>","resumable":false,"upload_url":"https://storage.googleapis.com/twttr-tweet-compliance/1446017776678801409/submission/1168916625673924610_1446017776678801409?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=complianceapi-public-svc-acct%40twttr-compliance-public-prod.iam.gserviceaccount.com%2F20211007%2Fauto%2Fstorage%2Fgoog4_request&X-Goog-Date=20211007T074118Z&X-Goog-Expires=900&X-Goog-SignedHeaders=content-type%3Bhost&X-Goog-Signature=<SIG>","type":"tweets","download_expires_at":"2021-10-14T07:41:18.000Z","id":"1446017776678801409"}}'
)
# R-atR 2021-11-16, POST /2/compliance/jobs (users).
CREATE_USERS = json.loads(
    '{"data":{"download_expires_at":"2021-11-23T21:09:10.000Z","resumable":false,"status":"created","download_url":"https://storage.googleapis.com/twttr-user-compliance/1460716596591312898/delivery/1400164763938787342_1460716596591312898?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=complianceapi-public-svc-acct%40twttr-compliance-public-prod.iam.gserviceaccount.com%2F20211116%2Fauto%2Fstorage%2Fgoog4_request&X-Goog-Date=20211116T210910Z&X-Goog-Expires=604800&X-Goog-SignedHeaders=host&X-Goog-Signature=<SIG>","type":"users","upload_url":"https://storage.googleapis.com/twttr-user-compliance/1460716596591312898/submission/1400164763938787342_1460716596591312898?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=complianceapi-public-svc-acct%40twttr-compliance-public-prod.iam.gserviceaccount.com%2F20211116%2Fauto%2Fstorage%2Fgoog4_request&X-Goog-Date=20211116T210910Z&X-Goog-Expires=900&X-Goog-SignedHeaders=content-type%3Bhost&X-Goog-Signature=<SIG>","upload_expires_at":"2021-11-16T21:24:10.000Z","created_at":"2021-11-16T21:09:10.000Z","id":"1460716596591312898"}}'
)
# R-tweepy 2022-05-07 list (api-version 2.42, with meta.result_count).
LIST_2022 = json.loads(
    '{"data":[{"resumable":false,"upload_expires_at":"2022-05-07T13:35:52.000Z","download_expires_at":"2022-05-14T13:20:52.000Z","created_at":"2022-05-07T13:20:52.000Z","type":"tweets","download_url":"https://storage.googleapis.com/twttr-tweet-compliance/1522929458495242241/delivery/1168916625673924610_1522929458495242241?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=complianceapi-public-svc-acct%40twttr-compliance-public-prod.iam.gserviceaccount.com%2F20220507%2Fauto%2Fstorage%2Fgoog4_request&X-Goog-Date=20220507T132052Z&X-Goog-Expires=604800&X-Goog-SignedHeaders=host&X-Goog-Signature=<SIG>","upload_url":"https://storage.googleapis.com/twttr-tweet-compliance/1522929458495242241/submission/1168916625673924610_1522929458495242241?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=complianceapi-public-svc-acct%40twttr-compliance-public-prod.iam.gserviceaccount.com%2F20220507%2Fauto%2Fstorage%2Fgoog4_request&X-Goog-Date=20220507T132052Z&X-Goog-Expires=900&X-Goog-SignedHeaders=content-type%3Bhost&X-Goog-Signature=<SIG>","status":"created","id":"1522929458495242241"}],"meta":{"result_count":1}}'
)
# PR-cc1: GET /2/compliance/jobs?job_type=tweets, verbatim.
LIST_BAD_PARAM = json.loads(
    '{"errors":[{"parameters":{"type":[]},"message":"The `type` query parameter can not be empty"},{"parameters":{"job_type":["tweets"]},"message":"The query parameter [job_type] is not one of [type,status,compliance_job.fields]"}],"title":"Invalid Request","detail":"One or more parameters to your request was invalid.","type":"https://api.twitter.com/2/problems/invalid-request"}'  # noqa: E501
)
UNAUTHORIZED = json.loads(
    '{"title":"Unauthorized","type":"about:blank","status":401,"detail":"Unauthorized"}'
)
TOO_MANY_REQUESTS = json.loads(
    '{"title":"Too Many Requests","detail":"Too Many Requests","type":"about:blank","status":429}'
)
# R-atR result rows (verbatim).
TWEET_ROW = json.loads(
    '{"id":"1160164553482756096","action":"delete","created_at":"2019-08-10T12:22:39.022Z","reason":"suspended"}'
)
USER_ROW_DELETED = json.loads(
    '{"id":"1101688072863993857","action":"delete","created_at":"2019-03-02T03:37:59+00:00","redacted_at":"2021-06-15T07:32:10+00:00","reason":"deleted"}'
)
USER_ROW_SUSPENDED = json.loads(
    '{"id":"829985394590629888","action":"delete","created_at":"2017-02-10T09:28:33+00:00","reason":"suspended"}'
)
# Recorded response headers of the API (R-tweepy) that the sandbox reproduces.
API_HEADERS = (
    "x-rate-limit-limit",
    "x-rate-limit-remaining",
    "x-rate-limit-reset",
    "api-version",
    "x-access-level",
    "x-response-time",
    "cache-control",
    "content-disposition",
)
# Recorded GCS headers (R-atR) on a successful upload and on the result download.
UPLOAD_HEADERS = (
    "etag",
    "x-goog-generation",
    "x-goog-metageneration",
    "x-goog-hash",
    "x-goog-stored-content-length",
    "x-goog-stored-content-encoding",
    "x-guploader-uploadid",
)
DOWNLOAD_HEADERS = (
    "accept-ranges",
    "cache-control",
    "last-modified",
    "etag",
    "x-goog-component-count",
    "x-goog-expiration",
    "x-goog-stored-content-length",
    "x-goog-hash",
    "content-length",
)


def job_of(body: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = body["data"]
    return data
