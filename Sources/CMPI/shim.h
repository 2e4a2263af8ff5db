#ifndef CMPI_SHIM_H
#define CMPI_SHIM_H
// Open MPI's predefined handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, ...) are
// macros over the addresses of global objects, which Swift cannot import.
// These accessors give them to Swift as ordinary values.
#include <mpi.h>

static inline MPI_Comm CMPI_COMM_WORLD(void) { return MPI_COMM_WORLD; }
static inline MPI_Comm CMPI_COMM_NULL(void) { return MPI_COMM_NULL; }
static inline MPI_Datatype CMPI_FLOAT(void) { return MPI_FLOAT; }
static inline MPI_Datatype CMPI_UINT16(void) { return MPI_UINT16_T; }
static inline MPI_Datatype CMPI_INT32(void) { return MPI_INT32_T; }
static inline MPI_Datatype CMPI_INT64(void) { return MPI_INT64_T; }
static inline MPI_Datatype CMPI_BYTE(void) { return MPI_BYTE; }
static inline MPI_Datatype CMPI_CHAR(void) { return MPI_CHAR; }
static inline MPI_Op CMPI_SUM(void) { return MPI_SUM; }
static inline MPI_Op CMPI_MAX(void) { return MPI_MAX; }
static inline MPI_Op CMPI_MIN(void) { return MPI_MIN; }
static inline void *CMPI_IN_PLACE(void) { return MPI_IN_PLACE; }
static inline MPI_Info CMPI_INFO_NULL(void) { return MPI_INFO_NULL; }
static inline MPI_Request CMPI_REQUEST_NULL(void) { return MPI_REQUEST_NULL; }
static inline MPI_Status *CMPI_STATUS_IGNORE(void) { return MPI_STATUS_IGNORE; }
static inline MPI_Status *CMPI_STATUSES_IGNORE(void) { return MPI_STATUSES_IGNORE; }
static inline int CMPI_SUCCESS(void) { return MPI_SUCCESS; }
static inline int CMPI_THREAD_SINGLE(void) { return MPI_THREAD_SINGLE; }
static inline int CMPI_THREAD_FUNNELED(void) { return MPI_THREAD_FUNNELED; }
static inline int CMPI_THREAD_SERIALIZED(void) { return MPI_THREAD_SERIALIZED; }
static inline int CMPI_THREAD_MULTIPLE(void) { return MPI_THREAD_MULTIPLE; }
static inline int CMPI_COMM_TYPE_SHARED(void) { return MPI_COMM_TYPE_SHARED; }
static inline int CMPI_MAX_PROCESSOR_NAME(void) { return MPI_MAX_PROCESSOR_NAME; }
static inline MPI_Errhandler CMPI_ERRORS_RETURN(void) { return MPI_ERRORS_RETURN; }
static inline int CMPI_ANY_SOURCE(void) { return MPI_ANY_SOURCE; }
// MPI_Status's fields, for the peer monitor's probes.
static inline int CMPI_status_source(const MPI_Status *s) { return s->MPI_SOURCE; }
static inline int CMPI_status_tag(const MPI_Status *s) { return s->MPI_TAG; }

#endif
