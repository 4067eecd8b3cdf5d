/* The part of the LiteRT C API that estella-c calls, declared here for the version it is built
 * and tested against: ai-edge-litert 2.3.0, whose libLiteRt.so ships without headers.
 *
 * Each declaration follows LiteRT's headers under litert/c/ at that version (Apache-2.0); the names, argument
 * order and enum values must agree with the library, and tests/c_runtime checks that they do by
 * running a real step. Other versions change these signatures (LiteRtCreateModelFromFile took no
 * environment before 2.x): bump LITERT_PINNED_VERSION only after reading the new headers. */
#ifndef ESTELLA_LITERT_API_H
#define ESTELLA_LITERT_API_H

#include <stddef.h>
#include <stdint.h>

#define LITERT_PINNED_VERSION "2.3.0"

typedef struct LiteRtEnvironmentT *LiteRtEnvironment;
typedef struct LiteRtModelT *LiteRtModel;
typedef struct LiteRtSignatureT *LiteRtSignature;
typedef struct LiteRtTensorT *LiteRtTensor;
typedef struct LiteRtOptionsT *LiteRtOptions;
typedef struct LiteRtCompiledModelT *LiteRtCompiledModel;
typedef struct LiteRtTensorBufferT *LiteRtTensorBuffer;

typedef int LiteRtStatus;              /* kLiteRtStatusOk == 0, anything else an error */
enum { kLiteRtStatusOk = 0 };
typedef size_t LiteRtParamIndex;
typedef int LiteRtHwAcceleratorSet;
enum { kLiteRtHwAcceleratorCpu = 1 << 0 };

typedef enum {                         /* the values of TfLiteType */
    kLiteRtElementTypeFloat32 = 1,
    kLiteRtElementTypeInt32 = 2,
} LiteRtElementType;

/* litert_any.h and litert_environment_options.h: the options an environment is created with. */
typedef enum { kLiteRtAnyTypeInt = 2 } LiteRtAnyType;
typedef struct {
    LiteRtAnyType type;
    union {
        _Bool bool_value;
        int64_t int_value;
        double real_value;
        const char *str_value;
        const void *ptr_value;
    };
} LiteRtAny;
typedef enum {
    kLiteRtEnvOptionTagAutoRegisterAccelerators = 24, /* a LiteRtHwAcceleratorSet */
    kLiteRtEnvOptionTagMinLoggerSeverity = 25,        /* a LiteRtLogSeverity */
} LiteRtEnvOptionTag;
typedef struct {
    LiteRtEnvOptionTag tag;
    LiteRtAny value;
} LiteRtEnvOption;
enum { kLiteRtLogSeverityError = 3 };

#define LITERT_TENSOR_MAX_RANK 8
typedef struct {
    unsigned int rank : 7;
    unsigned int has_strides : 1;
    int32_t dimensions[LITERT_TENSOR_MAX_RANK]; /* < 0: dynamic */
    uint32_t strides[LITERT_TENSOR_MAX_RANK];
} LiteRtLayout;

typedef struct {
    LiteRtElementType element_type;
    LiteRtLayout layout;
} LiteRtRankedTensorType;

/* LiteRT's own ABI checks of these structs (litert_layout.h, litert_model_types.h, litert_environment_options.h). */
#if defined(__SIZEOF_POINTER__) && __SIZEOF_POINTER__ == 8
_Static_assert(sizeof(LiteRtLayout) == 68, "LiteRtLayout size");
_Static_assert(sizeof(LiteRtRankedTensorType) == 72, "LiteRtRankedTensorType size");
_Static_assert(sizeof(LiteRtAny) == 16, "LiteRtAny size");
_Static_assert(sizeof(LiteRtEnvOption) == 24, "LiteRtEnvOption size");
#endif

typedef void (*LiteRtHostMemoryDeallocator)(void *addr);
#define LITERT_HOST_MEMORY_BUFFER_ALIGNMENT 64

/* litert_environment.h */
LiteRtStatus LiteRtCreateEnvironment(int num_options, const LiteRtEnvOption *options,
                                     LiteRtEnvironment *environment);
void LiteRtDestroyEnvironment(LiteRtEnvironment environment);

/* litert_model.h: the model borrows buffer_addr, which must outlive it. */
LiteRtStatus LiteRtCreateModelFromBuffer(LiteRtEnvironment environment, const void *buffer_addr,
                                         size_t buffer_size, LiteRtModel *model);
void LiteRtDestroyModel(LiteRtModel model);
LiteRtStatus LiteRtGetNumModelSignatures(LiteRtModel model, LiteRtParamIndex *num_signatures);
LiteRtStatus LiteRtGetModelSignature(LiteRtModel model, LiteRtParamIndex signature_index,
                                     LiteRtSignature *signature);
LiteRtStatus LiteRtGetNumSignatureInputs(LiteRtSignature signature, LiteRtParamIndex *num_inputs);
LiteRtStatus LiteRtGetSignatureInputName(LiteRtSignature signature, LiteRtParamIndex input_idx,
                                         const char **input_name);
LiteRtStatus LiteRtGetSignatureInputTensorByIndex(LiteRtSignature signature, LiteRtParamIndex input_idx,
                                                  LiteRtTensor *tensor);
LiteRtStatus LiteRtGetNumSignatureOutputs(LiteRtSignature signature, LiteRtParamIndex *num_outputs);
LiteRtStatus LiteRtGetSignatureOutputName(LiteRtSignature signature, LiteRtParamIndex output_idx,
                                          const char **output_name);
LiteRtStatus LiteRtGetSignatureOutputTensorByIndex(LiteRtSignature signature, LiteRtParamIndex output_idx,
                                                   LiteRtTensor *tensor);
LiteRtStatus LiteRtGetRankedTensorType(LiteRtTensor tensor, LiteRtRankedTensorType *ranked_tensor_type);

/* litert_options.h */
LiteRtStatus LiteRtCreateOptions(LiteRtOptions *options);
void LiteRtDestroyOptions(LiteRtOptions options);
LiteRtStatus LiteRtSetOptionsHardwareAccelerators(LiteRtOptions options,
                                                  LiteRtHwAcceleratorSet hardware_accelerators);

/* litert_compiled_model.h */
LiteRtStatus LiteRtCreateCompiledModel(LiteRtEnvironment environment, LiteRtModel model,
                                       LiteRtOptions compilation_options,
                                       LiteRtCompiledModel *compiled_model);
void LiteRtDestroyCompiledModel(LiteRtCompiledModel compiled_model);
LiteRtStatus LiteRtRunCompiledModel(LiteRtCompiledModel compiled_model, LiteRtParamIndex signature_index,
                                    size_t num_input_buffers, LiteRtTensorBuffer *input_buffers,
                                    size_t num_output_buffers, LiteRtTensorBuffer *output_buffers);

/* litert_tensor_buffer.h: host memory must be LITERT_HOST_MEMORY_BUFFER_ALIGNMENT-aligned and
 * outlive the buffer (deallocator NULL: the caller frees it). */
LiteRtStatus LiteRtCreateTensorBufferFromHostMemory(const LiteRtRankedTensorType *tensor_type,
                                                    void *host_buffer_addr, size_t host_buffer_size,
                                                    LiteRtHostMemoryDeallocator deallocator,
                                                    LiteRtTensorBuffer *buffer);
void LiteRtDestroyTensorBuffer(LiteRtTensorBuffer buffer);

#endif
