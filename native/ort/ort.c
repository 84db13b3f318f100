/* The loader of ONNX Runtime's shared library (see ort.h). */
#include <dlfcn.h>
#include <stdio.h>

#include "ort.h"

const OrtApiBase *
edgevm_ort_open(const char *path, char *err, size_t errlen)
{
    /* RTLD_LOCAL: ONNX Runtime's symbols (protobuf, abseil) never resolve another library's. */
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL) {
        snprintf(err, errlen, "%s", dlerror());
        return NULL;
    }
    const OrtApiBase *(*get_base)(void) = (const OrtApiBase *(*)(void))dlsym(handle, "OrtGetApiBase");
    if (get_base == NULL) {
        snprintf(err, errlen, "%s has no OrtGetApiBase: not an ONNX Runtime library", path);
        dlclose(handle);
        return NULL;
    }
    return get_base(); /* the handle stays open: ONNX Runtime is never unloaded */
}
