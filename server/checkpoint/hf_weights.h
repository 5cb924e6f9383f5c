// Hugging Face ViT / DeiT state dicts renamed to the timm keys the executor loads
// (vit_module.h). The mapping (docs/model-repository.md has the table), with P = "vit."
// for ViTForImageClassification and "deit." for both DeiT classes:
//   P embeddings.cls_token                         -> cls_token
//   P embeddings.distillation_token (DeiT)         -> dist_token
//   P embeddings.position_embeddings               -> pos_embed
//   P embeddings.patch_embeddings.projection.*     -> patch_embed.proj.*
//   P encoder.layer.{i}.layernorm_before.*         -> blocks.{i}.norm1.*
//   P encoder.layer.{i}.attention.attention.{query,key,value}.{weight,bias}
//                                                  -> blocks.{i}.attn.qkv.* (concatenated
//                                                     q, k, v along dim 0; zero biases
//                                                     when qkv_bias is false)
//   P encoder.layer.{i}.attention.output.dense.*   -> blocks.{i}.attn.proj.*
//   P encoder.layer.{i}.layernorm_after.*          -> blocks.{i}.norm2.*
//   P encoder.layer.{i}.intermediate.dense.*       -> blocks.{i}.mlp.fc1.*
//   P encoder.layer.{i}.output.dense.*             -> blocks.{i}.mlp.fc2.*
//   P layernorm.*                                  -> norm.*
//   classifier.* (ViT)                             -> head.*
//   cls_classifier.* / distillation_classifier.*   -> head.* / head_dist.* (WithTeacher:
//                                                     logits = mean of the two heads)
//   classifier.* (DeiTForImageClassification)      -> head = 2 x classifier, head_dist = 0:
//      that class keeps the distillation token in the sequence but reads only CLS; the
//      executor's distilled head computes (head(cls) + head_dist(dist)) / 2, which with
//      these weights is classifier(cls) exactly (scaling by 2 and adding 0 are exact).
//   P pooler.* is ignored (the classification classes do not use it).
// Every expected key must be present with its exact shape; any other key is an error.
//
// Errors: INVALID_ARGUMENT listing missing keys, unexpected keys and shape mismatches
// (each with the expected and actual shape), up to 8 of each.
// Thread-safety: a pure function.
#ifndef VITSERVE_SERVER_CHECKPOINT_HF_WEIGHTS_H_
#define VITSERVE_SERVER_CHECKPOINT_HF_WEIGHTS_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/checkpoint/checkpoint.h"
#include "server/spec/model_spec.h"

namespace vitserve {

// `hf_class`: one of kHfVit, kHfDeit, kHfDeitTeacher (hf_config.h).
absl::StatusOr<StateDict> HfToTimmStateDict(const StateDict& hf, const Architecture& arch,
                                            absl::string_view hf_class);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_CHECKPOINT_HF_WEIGHTS_H_
