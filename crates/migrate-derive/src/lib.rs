//! `#[derive(Dependencies)]`: the dependency edges of a shaku component, read from shaku's own
//! attributes so that they can never drift from what shaku injects.
//!
//! Put it beside `#[derive(shaku::Component)]`:
//!
//! ```text
//! #[derive(Component, Dependencies)]
//! #[shaku(interface = CustomerScanner)]
//! struct PagingScanner {
//!     #[shaku(inject)]
//!     board: Arc<dyn StatusBoard>,
//!     #[shaku(inject)]
//!     connection: Arc<dyn Connection>,
//!     fetch_size: usize,
//! }
//! ```
//!
//! The derive implements `migrate_core::ComponentInfo` for the struct. The component's name is
//! `<dyn Interface as migrate_core::NamedInterface>::NAME` and each `#[shaku(inject)]` field of
//! type `Arc<dyn Dep>` adds the edge to `<dyn Dep as NamedInterface>::NAME`. Both go through the
//! type checker: an injected interface without a name, or a misspelt one, does not compile.

use proc_macro::TokenStream;
use quote::quote;
use syn::{
    Data, DeriveInput, Fields, GenericArgument, Meta, PathArguments, Token, Type,
    parse_macro_input, punctuated::Punctuated,
};

/// Derives `migrate_core::ComponentInfo` from `#[shaku(interface = ...)]` and the
/// `#[shaku(inject)]` fields.
#[proc_macro_derive(Dependencies, attributes(shaku))]
pub fn derive_dependencies(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

fn expand(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let interface = interface_of(input)?;
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new_spanned(
            &input.ident,
            "Dependencies can only be derived for a struct",
        ));
    };
    let mut dependencies = Vec::new();
    if let Fields::Named(fields) = &data.fields {
        for field in &fields.named {
            if is_injected(&field.attrs)? {
                dependencies.push(arc_inner(&field.ty)?);
            }
        }
    }
    let ident = &input.ident;
    let (impl_generics, type_generics, where_clause) = input.generics.split_for_impl();
    let implementation = ident.to_string();
    Ok(quote! {
        impl #impl_generics ::migrate_core::ComponentInfo for #ident #type_generics #where_clause {
            fn descriptor() -> ::migrate_core::ComponentDescriptor {
                ::migrate_core::ComponentDescriptor::new(
                    <dyn #interface as ::migrate_core::NamedInterface>::NAME,
                    #implementation,
                    ::std::vec![
                        #( <#dependencies as ::migrate_core::NamedInterface>::NAME ),*
                    ],
                )
            }
        }
    })
}

/// The path given in `#[shaku(interface = Path)]` on the struct.
fn interface_of(input: &DeriveInput) -> syn::Result<syn::Path> {
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("shaku")) {
        let metas = attr.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)?;
        for meta in metas {
            if let Meta::NameValue(nv) = meta
                && nv.path.is_ident("interface")
            {
                if let syn::Expr::Path(path) = nv.value {
                    return Ok(path.path);
                }
                return Err(syn::Error::new_spanned(
                    nv.value,
                    "expected a trait path in `interface = ...`",
                ));
            }
        }
    }
    Err(syn::Error::new_spanned(
        &input.ident,
        "missing #[shaku(interface = ...)]: Dependencies reads the interface from it",
    ))
}

/// Whether the field carries `#[shaku(inject)]`.
fn is_injected(attrs: &[syn::Attribute]) -> syn::Result<bool> {
    for attr in attrs.iter().filter(|a| a.path().is_ident("shaku")) {
        let metas = attr.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)?;
        if metas
            .iter()
            .any(|meta| matches!(meta, Meta::Path(path) if path.is_ident("inject")))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `dyn Trait` out of `Arc<dyn Trait>`, the only shape shaku injects.
fn arc_inner(ty: &Type) -> syn::Result<Type> {
    if let Type::Path(path) = ty
        && let Some(last) = path.path.segments.last()
        && last.ident == "Arc"
        && let PathArguments::AngleBracketed(args) = &last.arguments
        && let Some(GenericArgument::Type(inner)) = args.args.first()
    {
        return Ok(inner.clone());
    }
    Err(syn::Error::new_spanned(
        ty,
        "an injected field must have the type Arc<dyn Interface>",
    ))
}
