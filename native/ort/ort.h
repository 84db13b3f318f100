/* vm.ml._ort: the types of ONNX Runtime's C API that vm/ml/ortapi.py calls, and the loader of its
 * shared library. The onnxruntime wheel ships no header, so this declares only what is called, with
 * the signatures of onnxruntime_c_api.h; OrtApi itself is not declared: vm/ml/ortapi.py reads its
 * members by index and casts each to the type named after it here. build.py hands this file to
 * cffi as its cdef (without the preprocessor lines) and to the compiler as the module's header. */
#ifndef EDGEVM_ORT_H
#define EDGEVM_ORT_H
#include <stddef.h>
#include <stdint.h>

typedef struct OrtStatus OrtStatus;
typedef struct OrtEnv OrtEnv;
typedef struct OrtSession OrtSession;
typedef struct OrtSessionOptions OrtSessionOptions;
typedef struct OrtRunOptions OrtRunOptions;
typedef struct OrtValue OrtValue;
typedef struct OrtMemoryInfo OrtMemoryInfo;
typedef struct OrtTypeInfo OrtTypeInfo;
typedef struct OrtTensorTypeAndShapeInfo OrtTensorTypeAndShapeInfo;
typedef struct OrtAllocator OrtAllocator;

typedef struct OrtApiBase {
    const void *const *(*GetApi)(uint32_t version);
    const char *(*GetVersionString)(void);
} OrtApiBase;

typedef enum GraphOptimizationLevel {
    ORT_DISABLE_ALL = 0, ORT_ENABLE_BASIC = 1, ORT_ENABLE_EXTENDED = 2, ORT_ENABLE_ALL = 99
} GraphOptimizationLevel;
typedef enum ExecutionMode { ORT_SEQUENTIAL = 0, ORT_PARALLEL = 1 } ExecutionMode;

/* Function pointer types of the OrtApi members called, named after the member. */
typedef int (*ort_GetErrorCode)(const OrtStatus *);
typedef const char *(*ort_GetErrorMessage)(const OrtStatus *);
typedef OrtStatus *(*ort_CreateEnv)(int, const char *, OrtEnv **);
typedef OrtStatus *(*ort_CreateSessionFromArray)(const OrtEnv *, const void *, size_t, const OrtSessionOptions *,
                                                 OrtSession **);
typedef OrtStatus *(*ort_Run)(OrtSession *, const OrtRunOptions *, const char *const *, const OrtValue *const *,
                              size_t, const char *const *, size_t, OrtValue **);
typedef OrtStatus *(*ort_CreateSessionOptions)(OrtSessionOptions **);
typedef OrtStatus *(*ort_SetSessionExecutionMode)(OrtSessionOptions *, ExecutionMode);
typedef OrtStatus *(*ort_SessionOptionsOnly)(OrtSessionOptions *);
typedef OrtStatus *(*ort_SessionOptionsInt)(OrtSessionOptions *, int);
typedef OrtStatus *(*ort_SetSessionGraphOptimizationLevel)(OrtSessionOptions *, GraphOptimizationLevel);
typedef OrtStatus *(*ort_SessionGetCount)(const OrtSession *, size_t *);
typedef OrtStatus *(*ort_SessionGetTypeInfo)(const OrtSession *, size_t, OrtTypeInfo **);
typedef OrtStatus *(*ort_SessionGetName)(const OrtSession *, size_t, OrtAllocator *, char **);
typedef OrtStatus *(*ort_CreateRunOptions)(OrtRunOptions **);
typedef OrtStatus *(*ort_RunOptionsSetRunLogSeverityLevel)(OrtRunOptions *, int);
typedef OrtStatus *(*ort_RunOptionsSetTerminate)(OrtRunOptions *);
typedef OrtStatus *(*ort_CreateTensorAsOrtValue)(OrtAllocator *, const int64_t *, size_t, int, OrtValue **);
typedef OrtStatus *(*ort_CreateTensorWithDataAsOrtValue)(const OrtMemoryInfo *, void *, size_t, const int64_t *,
                                                         size_t, int, OrtValue **);
typedef OrtStatus *(*ort_IsTensor)(const OrtValue *, int *);
typedef OrtStatus *(*ort_GetTensorMutableData)(OrtValue *, void **);
typedef OrtStatus *(*ort_FillStringTensor)(OrtValue *, const char *const *, size_t);
typedef OrtStatus *(*ort_GetStringTensorDataLength)(const OrtValue *, size_t *);
typedef OrtStatus *(*ort_GetStringTensorContent)(const OrtValue *, void *, size_t, size_t *, size_t);
typedef OrtStatus *(*ort_CastTypeInfoToTensorInfo)(const OrtTypeInfo *, const OrtTensorTypeAndShapeInfo **);
typedef OrtStatus *(*ort_GetOnnxTypeFromTypeInfo)(const OrtTypeInfo *, int *);
typedef OrtStatus *(*ort_GetTensorElementType)(const OrtTensorTypeAndShapeInfo *, int *);
typedef OrtStatus *(*ort_GetDimensionsCount)(const OrtTensorTypeAndShapeInfo *, size_t *);
typedef OrtStatus *(*ort_GetDimensions)(const OrtTensorTypeAndShapeInfo *, int64_t *, size_t);
typedef OrtStatus *(*ort_GetSymbolicDimensions)(const OrtTensorTypeAndShapeInfo *, const char **, size_t);
typedef OrtStatus *(*ort_GetTensorTypeAndShape)(const OrtValue *, OrtTensorTypeAndShapeInfo **);
typedef OrtStatus *(*ort_CreateCpuMemoryInfo)(int, int, OrtMemoryInfo **);
typedef OrtStatus *(*ort_AllocatorFree)(OrtAllocator *, void *);
typedef OrtStatus *(*ort_GetAllocatorWithDefaultOptions)(OrtAllocator **);
typedef OrtStatus *(*ort_AddFreeDimensionOverrideByName)(OrtSessionOptions *, const char *, int64_t);
typedef OrtStatus *(*ort_GetAvailableProviders)(char ***, int *);
typedef OrtStatus *(*ort_ReleaseAvailableProviders)(char **, int);
typedef OrtStatus *(*ort_AddSessionConfigEntry)(OrtSessionOptions *, const char *, const char *);
typedef OrtStatus *(*ort_SessionOptionsAppendExecutionProvider)(OrtSessionOptions *, const char *,
                                                                const char *const *, const char *const *, size_t);
typedef void (*ort_Release)(void *);

/* ort.c: load the library (RTLD_NOW | RTLD_LOCAL, never unloaded) and return OrtGetApiBase(), or
 * NULL with the loader's message in err. */
const OrtApiBase *edgevm_ort_open(const char *path, char *err, size_t errlen);

#endif
