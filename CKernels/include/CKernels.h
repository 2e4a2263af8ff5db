#include "weft_kernels.h"
#include "weft_pool.h"
#include "weft_ops.h"
#include "weft_collective.h"
