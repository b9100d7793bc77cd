package protocol

// SQLSTATE codes pgferry sends itself, named as in PostgreSQL's
// src/backend/utils/errcodes.txt.
const (
	SQLStateProtocolViolation        = "08P01"
	SQLStateConnectionFailure        = "08006"
	SQLStateConnectionRejected       = "08004"
	SQLStateUnableToConnect          = "08001"
	SQLStateInvalidPassword          = "28P01"
	SQLStateInvalidAuthorization     = "28000"
	SQLStateInvalidCatalogName       = "3D000"
	SQLStateTooManyConnections       = "53300"
	SQLStateInsufficientResources    = "53000"
	SQLStateAdminShutdown            = "57P01"
	SQLStateCannotConnectNow         = "57P03"
	SQLStateQueryCanceled            = "57014"
	SQLStateFeatureNotSupported      = "0A000"
	SQLStateInternalError            = "XX000"
	SQLStateInvalidParameterValue    = "22023"
	SQLStateConfigFileError          = "F0000"
	SQLStateInsufficientPrivilege    = "42501"
	SQLStateSyntaxError              = "42601"
	SQLStateInvalidSQLStatementName  = "26000"
	SQLStateDuplicatePreparedStmt    = "42P05"
	SQLStateIdleInTransactionTimeout = "25P03"
	SQLStateTransactionTimeout       = "25P04"
	SQLStateIdleSessionTimeout       = "57P05"
	SQLStateObjectNotInPrerequisite  = "55000"
	SQLStateProgramLimitExceeded     = "54000"
	SQLStateInFailedSQLTransaction   = "25P02"
	SQLStateReadOnlySQLTransaction   = "25006"
)
