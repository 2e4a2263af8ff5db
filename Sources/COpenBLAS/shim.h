#ifndef COPENBLAS_SHIM_H
#define COPENBLAS_SHIM_H
#include <cblas.h>
// Declared by OpenBLAS but not always by cblas.h.
void openblas_set_num_threads(int num_threads);
#endif
