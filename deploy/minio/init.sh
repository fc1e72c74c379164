#!/bin/sh
# One-shot storage set-up of the compose stack (service `storage-init`, image minio/mc).
# With MinIO itself, the only place that holds the storage administrator's credentials.
# Idempotent: safe to run on every `docker compose up`.
#
#   1. bucket $S3_BUCKET
#   2. policy livestream-app: the object operations the platform needs in that bucket
#      (read, write, delete objects; list the bucket), nothing else
#   3. user $S3_ACCESS_KEY / $S3_SECRET_KEY (the app's keys) with that policy
#   4. anonymous read (s3:GetObject only) of live/ (HLS, replays, thumbnails): what viewers
#      fetch through the edge. No listing, nothing else public. The same statement as
#      transcoding/storage.py viewer_read_policy().
set -eu

: "${MINIO_ROOT_USER:?MINIO_ROOT_USER is required}"
: "${MINIO_ROOT_PASSWORD:?MINIO_ROOT_PASSWORD is required}"
: "${S3_ACCESS_KEY:?S3_ACCESS_KEY (the app user) is required}"
: "${S3_SECRET_KEY:?S3_SECRET_KEY (the app user) is required}"
: "${S3_BUCKET:?S3_BUCKET is required}"
endpoint="${S3_ENDPOINT_URL:-http://minio:9000}"
policy_name="livestream-app"
public_prefix="live/"

if [ "$S3_ACCESS_KEY" = "$MINIO_ROOT_USER" ]; then
  echo "storage-init: S3_ACCESS_KEY must differ from MINIO_ROOT_USER (the app gets its own user)" >&2
  exit 1
fi

# Shell built-ins and mc only: the mc image has few other tools. The container is thrown away.
work="${TMPDIR:-/tmp}"

# The administrator's alias lives in this container's mc config only.
mc alias set origin "$endpoint" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null

mc mb --ignore-existing "origin/$S3_BUCKET"

printf '%s\n' '{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "AppObjects",
      "Effect": "Allow",
      "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
      "Resource": ["arn:aws:s3:::'"$S3_BUCKET"'/*"]
    },
    {
      "Sid": "AppListBucket",
      "Effect": "Allow",
      "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
      "Resource": ["arn:aws:s3:::'"$S3_BUCKET"'"]
    }
  ]
}' > "$work/storage-init-app-policy.json"

printf '%s\n' '{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "ViewersReadHls",
      "Effect": "Allow",
      "Principal": {"AWS": ["*"]},
      "Action": ["s3:GetObject"],
      "Resource": ["arn:aws:s3:::'"$S3_BUCKET"'/'"$public_prefix"'*"]
    }
  ]
}' > "$work/storage-init-viewer-read.json"

# `policy create` replaces a policy of the same name, so edits here reach existing stacks.
mc admin policy create origin "$policy_name" "$work/storage-init-app-policy.json"
# `user add` on an existing user updates its secret key.
mc admin user add origin "$S3_ACCESS_KEY" "$S3_SECRET_KEY"
if ! out=$(mc admin policy attach origin "$policy_name" --user "$S3_ACCESS_KEY" 2>&1); then
  case "$out" in
    *"already"*) ;;  # attached on an earlier run
    *) echo "$out" >&2; exit 1 ;;
  esac
fi
# Replaces any earlier anonymous policy (for example a whole-bucket download).
mc anonymous set-json "$work/storage-init-viewer-read.json" "origin/$S3_BUCKET"

echo "storage-init: bucket $S3_BUCKET ready; app user $S3_ACCESS_KEY has $policy_name; anonymous read of $public_prefix only"
