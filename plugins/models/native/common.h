#include <stdint.h>
#include <stdlib.h>
#include <string.h>
typedef int64_t IDX;
#if defined(__AVX512F__)
#define VBYTES 64
#define TW 6
#define TP 4
#elif defined(__aarch64__)
#define VBYTES 16
#define TW 5
#define TP 4
#elif defined(__AVX__)
#define VBYTES 32
#define TW 3
#define TP 3
#else
#define VBYTES 16
#define TW 3
#define TP 3
#endif
#define BLK 256
