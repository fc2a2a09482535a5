"""An S3 client for router/tests/media_e2e.rs, built on boto3 (not on object_store, the crate
Triggerfish uses), so that what the test writes and reads is checked by an independent client.

    client.py ENDPOINT mb BUCKET
    client.py ENDPOINT put BUCKET KEY FILE
    client.py ENDPOINT ls BUCKET PREFIX       one key per line
    client.py ENDPOINT get BUCKET KEY         the object on stdout

Credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; the region is us-east-1.
"""

import sys

import boto3


def main(endpoint, command, *args):
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    if command == "mb":
        (bucket,) = args
        s3.create_bucket(Bucket=bucket)
    elif command == "put":
        bucket, key, path = args
        with open(path, "rb") as body:
            s3.put_object(Bucket=bucket, Key=key, Body=body)
    elif command == "ls":
        bucket, prefix = args
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", []):
                print(item["Key"])
    elif command == "get":
        bucket, key = args
        sys.stdout.buffer.write(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main(*sys.argv[1:])
