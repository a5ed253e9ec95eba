"""pulumi-aws v7 type tokens the policies look at, as the engine reports them."""

BUCKET = "aws:s3/bucket:Bucket"
#: Deprecated in v7 but still creatable; it is the same S3 bucket.
BUCKET_V2 = "aws:s3/bucketV2:BucketV2"
BUCKET_TYPES = frozenset({BUCKET, BUCKET_V2})

BUCKET_ENCRYPTION = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
BUCKET_ENCRYPTION_V2 = "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2"
BUCKET_ENCRYPTION_TYPES = frozenset({BUCKET_ENCRYPTION, BUCKET_ENCRYPTION_V2})
BUCKET_PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"

SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
DEFAULT_SECURITY_GROUP = "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"
SECURITY_GROUP_INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
#: The legacy rule resource; ``type`` says ingress or egress.
SECURITY_GROUP_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"

LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
INSTANCE = "aws:ec2/instance:Instance"
SPOT_INSTANCE_REQUEST = "aws:ec2/spotInstanceRequest:SpotInstanceRequest"
LAUNCH_CONFIGURATION = "aws:ec2/launchConfiguration:LaunchConfiguration"
#: Resources shaped like an instance: top-level metadata options, block devices, user data.
INSTANCE_LIKE_TYPES = frozenset({INSTANCE, SPOT_INSTANCE_REQUEST, LAUNCH_CONFIGURATION})
EBS_VOLUME = "aws:ebs/volume:Volume"

IAM_POLICY = "aws:iam/policy:Policy"
IAM_ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
IAM_USER_POLICY = "aws:iam/userPolicy:UserPolicy"
IAM_GROUP_POLICY = "aws:iam/groupPolicy:GroupPolicy"
#: Identity policies whose document is the ``policy`` property.
IAM_POLICY_DOCUMENT_TYPES = frozenset({IAM_POLICY, IAM_ROLE_POLICY, IAM_USER_POLICY, IAM_GROUP_POLICY})
IAM_ROLE = "aws:iam/role:Role"
#: Attachments whose managed policy is the ``policyArn`` property.
IAM_POLICY_ATTACHMENT_TYPES = frozenset(
    {
        "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
        "aws:iam/userPolicyAttachment:UserPolicyAttachment",
        "aws:iam/groupPolicyAttachment:GroupPolicyAttachment",
        "aws:iam/policyAttachment:PolicyAttachment",
    }
)
IAM_ROLE_POLICY_ATTACHMENTS_EXCLUSIVE = "aws:iam/rolePolicyAttachmentsExclusive:RolePolicyAttachmentsExclusive"

SECRETSMANAGER_SECRET = "aws:secretsmanager/secret:Secret"
