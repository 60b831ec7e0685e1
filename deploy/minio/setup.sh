#!/bin/sh
# The store's bucket and the app's key, limited to it: run once per start by the compose
# stack's store-setup service (minio/mc), with the root credentials from the secrets volume.
set -eu
S=/secrets
mc alias set store http://minio:9000 "$(cat $S/minio-root-user)" "$(cat $S/minio-root-password)"
mc mb --ignore-existing "store/${S3_BUCKET}"
cat > /tmp/policy.json <<JSON
{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": ["s3:GetBucketLocation", "s3:ListBucket",
      "s3:ListBucketMultipartUploads"], "Resource": ["arn:aws:s3:::${S3_BUCKET}"]},
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
      "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
      "Resource": ["arn:aws:s3:::${S3_BUCKET}/*"]}
  ]
}
JSON
mc admin policy create store app-bucket /tmp/policy.json
mc admin user add store "$(cat $S/app-access-key)" "$(cat $S/app-secret-key)"
mc admin policy attach store app-bucket --user "$(cat $S/app-access-key)" 2>/dev/null || true
echo "store-setup: bucket ${S3_BUCKET} and its key ready"
