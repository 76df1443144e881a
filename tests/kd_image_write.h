/* kd_image_write.h - stb_image_write for the tests and benchmarks that write PNG fixtures:
 * each file that includes this gets its own static copy, with the library's own warnings
 * silenced (its code is not ours to change). */
#ifndef KD_IMAGE_WRITE_H
#define KD_IMAGE_WRITE_H

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif
#include <stb_image_write.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

#endif
