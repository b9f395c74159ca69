/*
 * model_file.h: the one accessor the metadata functions (meta_api.c) need from the model.
 *
 * It keeps meta_api.c independent of struct rwkvc_model's layout, which model.h owns.
 * Implemented by the model loader (model.c).
 */
#ifndef RWKVC_MODEL_FILE_H
#define RWKVC_MODEL_FILE_H

#include "gguf.h"

/* The parsed GGUF file behind a loaded model (valid while m lives); NULL if the model has none. */
const rwkvc_gguf *rwkvc_model_gguf(const rwkvc_model *m);

#endif /* RWKVC_MODEL_FILE_H */
